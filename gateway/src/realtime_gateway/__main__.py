from realtime_gateway.cli import main

raise SystemExit(main())
