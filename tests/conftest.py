import os

import pytest
import torch

# Tests run on 2-core CI machines: keep torch from oversubscribing.
torch.set_num_threads(min(2, os.cpu_count() or 1))

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
