from battui.cli import main

main()
