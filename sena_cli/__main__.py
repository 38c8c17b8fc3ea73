from sena_cli.cli import main

main()
