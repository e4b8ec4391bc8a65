"""``parley bench``: a workload benchmark modelled on the original scaling discussion."""
