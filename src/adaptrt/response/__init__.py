"""Part I, the response study: a CNN classifier of lesion response and its class activation maps (CAMs).

Modules
-------
cam
    Grad-CAM, Grad-CAM++ and pixel-wise CAM (eqs. 3-5 of the paper) for 2-D and 3-D networks, and scores of
    a CAM against a planted ground-truth sub-region.

Nothing is imported here so that ``import adaptrt.response`` stays cheap; import the sub-modules
(``from adaptrt.response.cam import class_activation_map``), which load torch.
"""
