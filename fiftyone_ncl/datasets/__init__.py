"""Data sets shared by the demo, the benchmarks and the tests: Fashion-MNIST
with captions, coco-mini, and synthetic pair generators with known truth."""
