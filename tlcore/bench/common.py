"""Names every benchmark module shares."""

ROWS = {
    1: "baseline feature_extraction",
    2: "tlcore feature_extraction, cold cache",
    3: "tlcore feature_extraction, warm cache",
    4: "floor: one inference pass",
    5: "baseline finetune",
    6: "tlcore finetune",
    7: "predict, 1 image, warm",
    8: "peak RSS, finetune subprocess",
}
HYMENOPTERA = "hymenoptera_data"
GB = 2**30

