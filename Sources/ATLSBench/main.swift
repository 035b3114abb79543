// atls-bench: placeholder until the benchmark lands.
print("atls-bench: not yet implemented")
