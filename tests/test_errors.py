"""Every bad input raises OneByOneError (a ValueError) saying what was expected and what was got."""
import numpy as np
import pytest

from onebyone import OneByOneError, forms, layout, ops

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
    ],
)
def test_bad_input_is_refused_with_a_clear_message(call, pattern):
    with pytest.raises(OneByOneError, match=pattern):
        call()


def test_the_error_class_is_a_value_error():
    assert issubclass(OneByOneError, ValueError)
