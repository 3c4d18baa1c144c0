# CUDA runtime image with medq-synth and its `eval` extra. Build: docker build -t medq-synth .
# Run:   docker run --gpus all -v $PWD/out:/out medq-synth generate --source phantoms --out /out
FROM pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime
WORKDIR /opt/medq-synth
COPY pyproject.toml README.md LICENSE ./
COPY medq_synth ./medq_synth
COPY physics ./physics
COPY kernels ./kernels
COPY eval ./eval
RUN pip install --no-cache-dir ".[eval]"
ENTRYPOINT ["medq-synth"]
CMD ["--help"]
