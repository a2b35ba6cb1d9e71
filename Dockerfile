# The one image of the service: `provisioning worker`, `projector`, `api` and the hook jobs.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY sagas sagas
COPY consumer consumer
COPY producers producers
COPY projection projection
COPY api api
COPY provisioning provisioning
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin provisioning
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001
ENTRYPOINT ["provisioning"]
CMD ["--help"]
