"""Differentiable supernets over a :class:`spaces.space.SearchSpace`."""

from spaces.supernet.base import ArchChoice, PathSample, Supernet
from spaces.supernet.densenas import DenseNASSupernet, RoutingSample
from spaces.supernet.dmasking import ArchSample, DMaskingSupernet
from spaces.supernet.expected_latency import SpaceLatency, space_latency_keys
from spaces.supernet.gumbel import gumbel_softmax, hard_gumbel, temperature
from spaces.supernet.masking import SpatialMasks, channel_mask, resize_input

__all__ = ["ArchChoice", "ArchSample", "PathSample", "DMaskingSupernet", "DenseNASSupernet", "RoutingSample",
           "SpaceLatency", "SpatialMasks", "Supernet", "channel_mask", "gumbel_softmax", "hard_gumbel", "resize_input",
           "space_latency_keys", "temperature"]
