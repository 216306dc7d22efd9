"""Package data (small tables shipped with cgnf_fast; each file names its source)."""
