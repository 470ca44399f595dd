from bgws.cli import main

raise SystemExit(main())
