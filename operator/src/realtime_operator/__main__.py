from realtime_operator.cli import main

main()
