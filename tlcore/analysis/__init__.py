"""Why a model errs and which run is better: reports, Grad-CAM, hold-out sets, statistics, LR finder."""
