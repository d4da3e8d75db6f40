from tests.fake_stages.graph import maybe_sleep, spec, write_parts

STAGE = spec("source", reads=["data"])


def run(ctx, cfg, inputs):
    import ray

    maybe_sleep()

    @ray.remote
    def square(x):
        return x * x

    values = ray.get([square.remote(cfg.data.seed + i) for i in range(3)])
    return write_parts(ctx, "source", [{"value": v} for v in values])
