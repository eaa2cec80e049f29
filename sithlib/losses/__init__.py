"""SSL objectives, one pure function each, computed in fp32 with the papers' defaults."""
