"""Every bad input raises OneByOneError (a ValueError) saying what was expected and what was got."""
import numpy as np
import pytest

from onebyone import OneByOneError, algebra, cost, forms, layout, ops, quant

X = np.zeros((1, 4, 6, 6))
W1 = np.zeros((8, 4, 1, 1))


@pytest.mark.parametrize(
    "call,pattern",
    [
        # wrong rank
        (
            lambda: ops.conv2d(np.zeros((4, 6, 6)), np.zeros((8, 4, 3, 3))),
            r"x must have rank 4, got rank 3 with shape \(4, 6, 6\)",
        ),
        (lambda: ops.conv2d(X, np.zeros((8, 4, 3))), r"w must have rank 4, got rank 3 with shape \(8, 4, 3\)"),
        (lambda: ops.dense(np.zeros((2, 3)), np.zeros(3)), r"w must have rank 2, got rank 1"),
        (
            lambda: ops.conv1x1(np.zeros(5), np.zeros((2, 5))),
            r"channels-first \(N, C, ...\) with rank >= 2 for layout NCHW, got shape \(5,\)",
        ),
        # channel mismatch
        (
            lambda: ops.conv2d(X, np.zeros((8, 3, 3, 3))),
            r"channel mismatch: x has 4 channels \(NCHW shape \(1, 4, 6, 6\)\) "
            r"but w expects 3 per group x 1 group\(s\) = 3",
        ),
        (lambda: ops.conv1x1(X, np.zeros((8, 5))), r"channel mismatch: x has 4 channels .* expects 5"),
        (
            lambda: ops.conv1x1(np.zeros((2, 6, 6, 4)), np.zeros((1, 1, 3, 8)), layout="NHWC"),
            r"channel mismatch: x has 4 channels \(NHWC",
        ),
        (lambda: ops.dense(np.zeros((2, 3)), np.zeros((4, 5))), r"channel mismatch: x has 3 features .* expects 5"),
        # groups
        (
            lambda: ops.conv2d(X, np.zeros((8, 1, 3, 3)), groups=3),
            r"channels not divisible by groups: x has 4 channels .* groups=3",
        ),
        (
            lambda: ops.conv1x1(X, np.zeros((6, 2)), groups=4),
            r"output channels not divisible by groups: w has 6 output channels",
        ),
        (lambda: ops.conv1x1(X, W1, groups=0), r"groups must be an integer >= 1, got 0"),
        # layout
        (lambda: ops.conv2d(X, W1, layout="NWHC"), r"layout must be one of \('NCHW', 'NHWC'\), got 'NWHC'"),
        (lambda: ops.conv1x1(X, W1, layout="nchw"), r"layout must be one of .* got 'nchw'"),
        (lambda: layout.convert(X, "NCHW", "CHWN"), r"got 'CHWN'"),
        # kernel larger than the padded input
        (
            lambda: ops.conv2d(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 5, 5))),
            r"kernel 5 .* larger than the padded input 4 \(input 4, padding 0\+0\)",
        ),
        (
            lambda: ops.conv2d(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), dilation=2),
            r"effective extent 5\) is larger than the padded input 4",
        ),
        # stride
        (lambda: ops.conv2d(X, W1, stride=0), r"stride must be an integer >= 1, got 0"),
        (lambda: ops.conv2d(X, W1, stride=-2), r"stride must be an integer >= 1, got -2"),
        (lambda: ops.conv1x1(X, W1, stride=1.5), r"stride must be an integer >= 1, got 1.5 \(float\)"),
        (lambda: ops.conv2d(X, W1, stride=(1, 2, 3)), r"stride must be an int or a pair of ints, got \(1, 2, 3\)"),
        (lambda: ops.conv1x1(X, W1, stride=True), r"stride must be an integer >= 1, got True \(bool\)"),
        # padding
        (lambda: ops.conv2d(X, W1, padding="full"), r"padding must be an int, a pair, 'valid' or 'same', got 'full'"),
        (lambda: ops.conv2d(X, W1, padding=-1), r"padding must be an integer >= 0, got -1"),
        # empty arrays and non-numeric input
        (
            lambda: ops.conv2d(np.zeros((0, 4, 6, 6)), np.zeros((8, 4, 3, 3))),
            r"x must not be empty, got shape \(0, 4, 6, 6\)",
        ),
        (lambda: ops.conv1x1(X, np.zeros((0, 4))), r"w must not be empty, got shape \(0, 4\)"),
        (lambda: ops.dense(np.zeros((2, 0)), np.zeros((3, 0))), r"x must not be empty"),
        (lambda: ops.dense(np.array([["a", "b"]]), np.zeros((3, 2))), r"x must be a numeric array, got dtype <U1"),
        # bias and gradients
        (lambda: ops.conv1x1(X, W1, np.zeros(7)), r"b must have shape \(8,\) to match 8 output channels, got \(7,\)"),
        (
            lambda: ops.conv1x1_backward(X, W1, np.zeros((1, 8, 3, 3))),
            r"grad_y must have the output shape \(1, 8, 6, 6\), got \(1, 8, 3, 3\)",
        ),
        # NaN / Inf in weights given to a converter
        (
            lambda: forms.dense_to_conv1x1(np.array([[1.0, np.nan]])),
            r"w must be finite, got 1 NaN/Inf value\(s\) in shape \(1, 2\)",
        ),
        (lambda: forms.conv_to_patch_dense(np.full((1, 1, 3, 3), np.inf)), r"w must be finite, got 9 NaN/Inf"),
        (lambda: layout.keras_to_linear(np.array([[np.inf]])), r"kernel must be finite"),
        # wrong shapes for the form converters
        (
            lambda: forms.dense_to_full_kernel(np.zeros((3, 10)), (1, 3, 3)),
            r"w must have C\*H\*W=9 input columns for a \(1, 3, 3\) map, got shape \(3, 10\)",
        ),
        (lambda: layout.pointwise_matrix(np.zeros((8, 4, 3, 3))), r"w must be a 1x1 weight"),
        # the algebra behind the rewrites: wrong shapes and values were broadcast or raised NumPy's errors
        (lambda: algebra.merge_linear(np.ones((4, 3)), np.ones((4, 1)), np.ones((2, 4)), None), r"b must have rank 1"),
        (lambda: algebra.merge_linear(np.ones((4, 3)), np.ones(5), np.ones((2, 4)), None),
         r"b must have shape \(4,\) to match 4 output channels, got \(5,\)"),
        (lambda: algebra.batchnorm_affine(np.ones(3), np.ones((3, 1)), np.ones(3), np.ones(3), 1e-5),
         r"one running_var per channel \(3\), got shape \(3, 1\)"),
        (lambda: algebra.batchnorm_affine(np.ones(3), np.ones(4), np.ones(3), np.ones(3), 1e-5),
         r"one running_var per channel \(3\), got shape \(4,\)"),
        (lambda: algebra.batchnorm_affine(np.ones(2), np.array([1.0, -1.0]), np.ones(2), np.ones(2), 1e-5),
         r"running_var \+ eps must be > 0 for every channel; 1 of 2 are not \(channel 1"),
        (lambda: algebra.batchnorm_affine(np.ones(2), np.ones(2), np.ones(2), np.ones(2), "1e-5"),
         r"eps must be a number >= 0, got '1e-5'"),
        (lambda: algebra.fold_affine_before(np.ones((3, 2)), None, np.ones(4), np.ones(4), groups=2),
         r"output channels not divisible by groups: w has 3 output channels"),
        (lambda: algebra.fold_affine_before(np.ones(3), None, np.ones(3), np.ones(3)), r"w must have rank 2 or 3"),
        (lambda: algebra.choose_rank([], 0.9), r"singular_values must not be empty"),
        (lambda: algebra.choose_rank([0.0, 0.0], 0.9), r"hold no energy to keep"),
        # costs: a shape without its batch axis, arguments of the wrong type, padding no layer can have
        (lambda: cost.pool_cost((64, 56, 56), 2), r"input_shape \(64, 56, 56\) is ambiguous"),
        (lambda: cost.pool_cost((1, 8, 5, 5), 3, padding=5), r"padding must be at most half the kernel"),
        (lambda: cost.pool_cost((1, 8, 5, 5), 3, padding=((2, 2), (0, 0))), r"padding must be at most half the"),
        (lambda: cost.conv_output_size(7, 0), r"kernel must be an integer >= 1, got 0"),
        (lambda: cost.conv_output_size(7, 3, stride=0), r"stride must be an integer >= 1, got 0"),
        (lambda: cost.conv_output_size(7.5, 3), r"size must be an integer >= 1, got 7.5"),
        (lambda: cost.conv_output_size(7, 3, dilation=0), r"dilation must be an integer >= 1, got 0"),
        (lambda: cost.conv_cost((1, 3, 8, 8), 4, 3, stride=(2, "2")), r"stride must be an integer >= 1, got '2'"),
        (lambda: cost.pool_cost((1, 3, 8, 8), "foo"), r"kernel_size must be an integer >= 1, got 'foo'"),
        (lambda: cost.conv1x1_cost((4, 3), 2), r"one vector per sample is a dense layer's input \(dense_cost\)"),
        (lambda: cost.dense_cost(784, 10), r"input_shape must be a tuple of ints such as \(1, 784\), got 784"),
        (lambda: cost.conv_cost((1, 3, 8, 8), 4, 3, dtype=None), r"dtype must be a numeric NumPy dtype"),
        (lambda: cost.conv_cost((1, 3, 8, 8), 4, 3, dtype="U10"), r"dtype must be a numeric NumPy dtype"),
        (lambda: cost.conv_cost((1, 3, 8, 8), 4, 3, bias="no"), r"bias must be True or False, got 'no'"),
        (lambda: layout.flatten_permutation(3, "NCHW", "NHWC"), r"chw must be one feature map's \(C, H, W\), got 3"),
        # the ops: missing checks reached NumPy (a reshape, a 74 TB allocation)
        (lambda: ops.dense_backward(np.zeros((2, 3)), np.zeros((4, 5)), np.zeros((2, 4))),
         r"channel mismatch: x has 3 features"),
        (lambda: ops.conv2d(np.zeros((1, 1, 3000, 3000), np.float32), np.zeros((1, 1, 1500, 1500), np.float32),
                            padding="same"),
         r"the im2col copy of a \(1, 1, 3000, 3000\) input, 1500x1500 kernel needs"),
        (lambda: ops.conv2d(X, W1, padding=((1, 2), (0, 1))), r"pad both sides of an axis alike"),
        (lambda: ops.conv1x1(np.zeros((2, 4)), np.zeros((3, 4)), stride=2), r"no spatial axis to stride over"),
        (lambda: ops.conv1x1(X, W1, stride=(2, 2, 2)), r"stride must be an int or 2 ints"),
        (lambda: forms.sliding_dense(X, np.ones((6, 36)), None, 3, padding=10**5), r"padding a .* needs"),
        (lambda: forms.sliding_dense(X, 1.0, None, 3), r"w must have rank 2, got rank 0"),
        (lambda: forms.dense_per_pixel(X, 3.0), r"w must have rank 2, got rank 0"),
        (lambda: forms.dense_per_pixel(np.ones(3), np.ones((2, 3))), r"channels-first \(N, C, ...\) with rank >= 2"),
        (lambda: forms.shared_mlp_per_point(np.ones((1, 2, 3)), [np.ones((3, 3))]),
         r"layer 0 is ndarray of shape \(3, 3\)"),
        (lambda: forms.flatten(X, layout="bogus"), r"layout must be one of"),
        (lambda: quant.quantize(np.ones((2, 3)), axis=(0,)), r"axis must be in \[-2, 2\)"),
        (lambda: quant.pointwise_int(np.ones((1, 3, 2, 2)), np.ones((2, 3)), per_channel="no"),
         r"per_channel must be True or False"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(call, pattern):
    with pytest.raises(OneByOneError, match=pattern):
        call()


def test_the_error_class_is_a_value_error():
    assert issubclass(OneByOneError, ValueError)
