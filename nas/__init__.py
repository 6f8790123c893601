"""Neural architecture search for tiny MNIST CNNs: spec -> builder -> trainer -> search."""
