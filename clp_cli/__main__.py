"""``python -m clp_cli ...`` is ``clp ...``; torchrun starts its workers this way
(``torchrun --standalone --nproc_per_node=2 -m clp_cli train --streams prompt ...``)."""
import sys

from clp_cli.main import main

sys.exit(main())
