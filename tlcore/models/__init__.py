"""Networks: the backbone registry, heads, the offline Lite0 and the scratch CNN, weights, prediction."""
