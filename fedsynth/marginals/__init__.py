"""DP marginal tables on the public schema's bins, their consistent post-processing, and the
calibration of model-drawn rows to them (issue 21)."""
