"""Run under torchrun by test_train.py: a few DDP steps, then each rank writes its weights."""
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from onebyone.train import TrainConfig, train

if __name__ == "__main__":
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    cfg = TrainConfig("nin_digits", "digits", epochs=1, batch_size=128, lr=1e-2)
    model, metrics = train(cfg, out=out / "run", progress=False)
    rank = torch.distributed.get_rank()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"rank{rank}.safetensors"))
