"""The capacity plan `--dry-run` prints: the work each stage implies, and what it costs on the cluster.

Work (`work`) is counted from the configured networks themselves: each is built on the meta device
(shapes only: no memory, no weights) and torch.utils.flop_counter counts its forward on one image
(matmuls, convolutions and attention products, 2 FLOPs per multiply-add; elementwise ops are not
counted). A stage module declares its work with `work(cfg, nets) -> Work`, from these formulas:

    training   images x 3 x forward        images = steps x batch; a backward costs about two forwards
                                           (the gradients of the activations and of the weights)
    sampling   images x (steps x forward + guided steps x guiding pass)
               CFG's unconditional and PAG's perturbed pass run the main network again (PAG's skips
               a few attention products: counted in full); autoguidance runs the guide; classifier
               guidance the classifier's forward and its backward to the image
    features   images x the extractor's forward; clean-fid's Inception (a TorchScript file that may
               be absent) is counted as torchvision's Inception-v3 at 299 px, the same architecture

Cost (`cost`) is work over throughput: the effective TFLOP/s of one GPU for each kind of work and
precision, stated in `cluster.capacity` or measured by `python -m pipeline.bench gpu --out FILE`
(`cluster.capacity.bench`), or of one CPU core. A stage's units (pipeline.resources.Units, its own
declaration) say how many devices work at once, within the cluster's size:

    device-hours = FLOPs / rate of one device        wall-clock = FLOPs / (units at once x rate of a unit)

Units holding GPUs do a stage's computing (CPU units beside them coordinate); a stage without
units computes in the driver. Stages run one after another: the run's wall-clock is their sum.
Not costed: shard decoding (CPU; `python -m pipeline.bench shard` measures it), data loading,
PIL resizing for Inception, start-up, waiting for the autoscaler, sample grids during training.
"""
from pipeline.capacity.cost import CapacityError, ClusterSize, Row, Throughput, plan
from pipeline.capacity.work import Net, Networks, Part, Work, features, passes_per_image, sampling, training

__all__ = ["Net", "Networks", "Part", "Work", "training", "sampling", "features", "passes_per_image",
           "Throughput", "ClusterSize", "Row", "plan", "CapacityError"]
