"""Letter legend for shape suffixes used across linmix (`q_BTHK` is q with shape [B, T, H, K]).

B batch, T time, H heads, K key dim, V value dim, D model dim, C chunk length, N number of chunks,
S sequence shards, L layers, E embedding/vocab size, F MLP hidden width.

Conventions: layout [B, T, H, K]; gates are log-decays (<= 0); recurrent state [B, H, K, V] in fp32;
row-vector convention `o_t = q_t S_t`, `S_t = diag(a_t) S_{t-1} + k_t^T v_t`.
"""
