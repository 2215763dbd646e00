"""Compression of a pruned network into the file that ships: k-means weight sharing (quantize),
the entropy-coded .nnc format (codec, with network, layer_coding, entropy, biases and legacy), and
the size/accuracy grid of settings (grid)."""
