# temporal-ciba: the worker, callback service and codec server (`temporal-ciba`), and the sample
# payment API and payment agent's worker (`temporal-ciba-examples`, examples/).
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY temporal_ciba temporal_ciba
COPY examples examples
# The postgres extra: decision records in PostgreSQL when CIBA_RECORD_DSN is set. The samples
# without extras: the payment API and the payment agent need neither agent framework.
RUN pip install --no-cache-dir ".[postgres]" ./examples \
    && useradd --uid 10001 --no-create-home ciba \
    && mkdir /certs /data && chown ciba /certs /data

USER ciba
ENTRYPOINT ["temporal-ciba"]
CMD ["worker"]
