"""Evaluation metrics shared by the studies.

Modules
-------
classification
    Sensitivity, specificity, accuracy, precision, F1 and AUC of one test set (Part I's Table 1) with
    explicit NaN conventions; mean ± SD over repeated trials.
stats
    Paired comparison of two models over the same trials: mean difference with a bootstrap CI, Wilcoxon
    signed-rank test, and Nadeau & Bengio's corrected resampled t-test (the primary p-value).
"""
