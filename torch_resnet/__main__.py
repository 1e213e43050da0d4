import sys

from torch_resnet.cli import main

sys.exit(main())
