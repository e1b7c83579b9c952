"""Shape-suffix letters used across linmix (`q_BTHK` is q with shape [B, T, H, K]); the full
legend, one meaning per letter, is docs/notation.md.

B batch, T time, H heads, K key dim, V value dim, D channels, C chunk length, N number of chunks,
R / S query / key positions of a pair matrix, I / J sub-chunks, X gate width (1 or K), W sequence
shards, M state size of a state-space recurrence, G groups, L layers, E vocabulary, F MLP width.

Conventions: layout [B, T, H, K]; gates are log-decays (<= 0); recurrent state [B, H, K, V] in fp32;
row-vector convention `o_t = q_t S_t`, `S_t = diag(a_t) S_{t-1} + k_t^T v_t`.
"""
