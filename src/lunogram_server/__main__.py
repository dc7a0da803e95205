from lunogram_server.cli import main

main()
