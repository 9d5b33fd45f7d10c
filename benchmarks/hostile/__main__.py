from benchmarks.hostile.run import main

main()
