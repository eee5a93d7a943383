"""Stage-made knowledge: the networks, params blocks and artifact readers of the knowledge jobs.

- `professor`: the professor (CAAE) that refines a teacher's soft targets, `ProfessorSource`, refined targets.
- `probes`: linear probes on frozen teachers' stages and GPAC's per-layer teacher choice.
- `factor`: IE-KD's factor auto-encoder (`Coder`, `AutoEncoder`, `split_indices`).

Low level on purpose: these modules import only torch, pipeline.config, pipeline.errors,
pipeline.checkpoint, pipeline.sources and pipeline.losses, so the methods that train them
(pipeline.methods.*_job) and the methods that consume them (professor, gpac, ie_kd) both import them
without cycles. Each params class here is parsed from its params.yaml section (`professor`,
`probes`, `factor`) and is also the `Params` of the method that trains it.
"""
