"""Every numeric tolerance onnxedge uses, by name, in one place (the torch-free base layer,
so every layer and the tests import them; no test or check writes a literal of its own)."""

from __future__ import annotations

# --- float32 graph vs float32 torch vs float64 numpy reference ------------------------
#: max |a - b| on probabilities (the product's bar: 1e-5 is the figure to beat).
PROBABILITY_ATOL = 1e-6
#: max |a - b| on logits; logits of these MLPs are O(10), float32 eps * |logit| * depth.
LOGIT_ATOL = 1e-4
#: logit error relative to the magnitude of the terms summed into it (float32 rounding of
#: an n-term dot product is at most ~n * 6e-8 of it), guarded by LOGIT_ATOL near zero.
LOGIT_RTOL = 1e-5
#: relative difference between two computations of the same mean loss.
LOSS_RTOL = 1e-5
#: absolute floor for loss comparisons (a loss near 0 makes relative error meaningless).
LOSS_ATOL = 1e-6
#: |sum(probabilities) - 1| per row for a softmax head.
PROBABILITY_SUM_ATOL = 1e-5
#: a label tie: top-2 probabilities (or probability and threshold) this close; two
#: computations each within PROBABILITY_ATOL of the reference may label it differently.
LABEL_TIE_ATOL = 2 * PROBABILITY_ATOL

# --- numpy reference (float64) vs torch, for the math itself --------------------------
#: float64 reference vs torch float64.
REFERENCE_FLOAT64_RTOL = 1e-10
REFERENCE_FLOAT64_ATOL = 1e-12
#: float32 computations vs the float64 reference.
REFERENCE_FLOAT32_RTOL = 1e-5
REFERENCE_FLOAT32_ATOL = 1e-6
#: BCE on sigmoid probabilities equals BCE from logits (to REFERENCE_FLOAT64_*) only while
#: min(p, 1 - p) stays above this: log(1 - p) carries a rounding error of ~eps / (1 - p).
BCE_UNSATURATED_MIN_PROBABILITY = 1e-6
#: torch's BCEWithLogitsLoss, (1 - y) * x - log_sigmoid(x), cancels for a soft label and a
#: large |x| (x = -8208.75, y = 0.00195: off by 4.9e-4 in float32): comparisons with torch
#: allow this much more per unit of |logit| (~4 ulps); hard 0/1 labels never cancel.
TORCH_BCE_WITH_LOGITS_FLOAT32_ERROR_PER_LOGIT = 5e-7
TORCH_BCE_WITH_LOGITS_FLOAT64_ERROR_PER_LOGIT = 1e-15

# --- CUDA vs CPU execution providers -------------------------------------------------
#: max |p_cuda - p_cpu| on probabilities (make gpu-check).
PROVIDER_PROBABILITY_ATOL = 1e-5

# --- edge variants (int8 / fp16) against their fp32 source ----------------------------
#: minimum label agreement with the fp32 model on validation data.
VARIANT_MIN_LABEL_AGREEMENT = 0.995
#: maximum accuracy drop, in points (0.5 points = 0.005).
VARIANT_MAX_ACCURACY_DROP = 0.005
#: max |mean loss(int8) - mean loss(fp32)| in nats on the validation split (static int8
#: measured <= 0.004 on digits / breast-cancer over 4 seeds; a miscalibrated model is
#: off by far more).
INT8_MAX_LOSS_DELTA = 0.02
#: max |p_int8 - p_fp32| over every row and class: one row near a decision boundary
#: can move this much on an 8-bit grid (measured <= 0.15); label agreement guards the
#: decisions themselves.
INT8_MAX_PROBABILITY_ERROR = 0.3
#: max |mean loss(fp16) - mean loss(fp32)| in nats (measured <= 2e-5).
FP16_MAX_LOSS_DELTA = 1e-3
#: max |p_fp16 - p_fp32| over every row and class (measured <= 6e-4).
FP16_MAX_PROBABILITY_ERROR = 5e-3

# --- scoring engines (local vs Ray Data) on the same rows and the same model ---------
#: max |p_ray - p_local|: the same float32 graph on the same rows in other batches can
#: differ by a few float32 roundings (2**-21 = four ulps at 1.0; labels must be equal).
ENGINE_PROBABILITY_ATOL = 2.0**-21
