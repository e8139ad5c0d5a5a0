from device.bench.cli import main

raise SystemExit(main())
