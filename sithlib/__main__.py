from sithlib.cli import main

raise SystemExit(main())
