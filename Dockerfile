# temporal-ciba: the worker, callback service and codec server (`temporal-ciba`), and the sample
# payment API and payment agent's worker (`temporal-ciba-examples`, examples/).
#
# Reproducible: the base image by digest (the tag python:3.11-slim as it was when pinned;
# scripts/refresh-image-digests.sh moves it, with registry access), and every Python package
# from deploy/image-requirements.txt, one version each with the hashes of its files
# (scripts/lock-image.sh writes it from pyproject.toml; tests/unit/test_image_lock.py checks it
# covers what pyproject.toml asks for).
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

WORKDIR /app
COPY deploy/image-requirements.txt ./
# The dependencies: the postgres extra's too (decision records in PostgreSQL when
# CIBA_RECORD_DSN is set), and setuptools, to build the two projects below without fetching it.
RUN pip install --no-cache-dir --require-hashes --no-deps -r image-requirements.txt
COPY pyproject.toml README.md ./
COPY temporal_ciba temporal_ciba
COPY examples examples
# The project and the samples (no extras: the payment API and the payment agent need neither
# agent framework), built with the locked setuptools and nothing fetched.
RUN pip install --no-cache-dir --no-deps --no-build-isolation ".[postgres]" ./examples \
    && useradd --uid 10001 --no-create-home ciba \
    && mkdir /certs /data && chown ciba /certs /data

USER ciba
ENTRYPOINT ["temporal-ciba"]
CMD ["worker"]
