"""`python -m edgetl` (and `torchrun ... -m edgetl finetune ...` for several GPUs)."""

from edgetl.cli import main

main()
