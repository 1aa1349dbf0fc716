"""`python -m study.cli.verbs`: the `kd-study` command."""
from study.cli.verbs import main

raise SystemExit(main())
