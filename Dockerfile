# temporal-ciba: the worker, callback service, codec server and example payment API.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY temporal_ciba temporal_ciba
# The postgres extra: decision records in PostgreSQL when CIBA_RECORD_DSN is set.
RUN pip install --no-cache-dir ".[postgres]" \
    && useradd --uid 10001 --no-create-home ciba \
    && mkdir /certs /data && chown ciba /certs /data

USER ciba
ENTRYPOINT ["temporal-ciba"]
CMD ["worker"]
