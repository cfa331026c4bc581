"""The default reference architecture: MobileNetV2-style, sized for 28-32 px inputs.

AutoSpace keeps a known-good architecture in every candidate space so that no
space is worse than it and the evolution starts from a good region. This one
follows MobileNetV2's stage layout (its first block has no residual, as there) with a stride-1 stem (small images cannot
afford an early downsample), expansion 3 and a 256-wide head: about 4.6M MAdds
and 106K parameters on 28x28x1 with 10 classes.
"""

from __future__ import annotations

from spaces.arch import Arch

__all__ = ["REFERENCE_STAGES", "reference_arch"]

REFERENCE_STAGES = "ds_k3_c16_relu6_nores|ir_r2_k3_s2_e3_c24_relu6|ir_r2_k3_s2_e3_c40_relu6|ir_r2_k3_s2_e3_c80_relu6"


def reference_arch(in_channels: int, input_size: int, num_classes: int) -> Arch:
    """The reference for a data set's image shape and class count (stem stride 2 above 64 px)."""
    stem_stride = "_s2" if input_size > 64 else ""
    return Arch.parse(
        f"input={in_channels}x{input_size} stem=cn_k3{stem_stride}_c16_relu6 stages={REFERENCE_STAGES} "
        f"head=cn_k1_c256_relu6 classes={num_classes}"
    )
