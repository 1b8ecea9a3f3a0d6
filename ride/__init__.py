"""The science core of the RIDE pipeline.

Everything under ``ride`` is a plain library over tensors ``(B, C, H, W)`` in [0, 1] pixel
space: dataset readers, classifiers, attacks (FGSM, PGD) and defenders (median, TV, RIDE and
its ablation variants DAE, DIP, I-DIP) from Lin, Pfister and Zhang, "White-Box Adversarial
Defense via Self-Supervised Data Estimation" (arXiv 1909.06271). It imports only torch,
torchvision, numpy, scipy, scikit-image and scikit-learn.
"""
