"""Test configuration: one torch thread (tiny tensors; 2-core CI machines)."""

import os

import torch

torch.set_num_threads(int(os.environ.get("SKANOMALY_TEST_THREADS", "1")))
