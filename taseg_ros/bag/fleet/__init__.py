"""Many recordings, one command: `taseg bag eval` and `taseg bag select` over a fleet's recordings, on
this machine's processes or on a Ray cluster.

    recordings  which recordings (folders holding them, found by metadata.yaml), names, fingerprints
    engines     local (process pool) and ray (actors): one task per recording, retries of lost workers
    store       the output folder: one folder per recording, written whole; skip what is done
    evaluate    the worker of a fleet `bag eval` and the run
    rollup      the fleet report, from the folders alone
    progress    per recording and fleet progress lines, the run's timings
"""
