FROM python:3.11-slim
WORKDIR /srv/keel
COPY pyproject.toml README.md ./
COPY platform ./platform
COPY app_definitions ./app_definitions
COPY plugins ./plugins
RUN pip install --no-cache-dir ".[postgres,server]"
ENV KEEL_APPS_PATH=/srv/keel/app_definitions KEEL_INSTANCE_PATH=/srv/keel/instance KEEL_ENV=production
EXPOSE 8000
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "4", "keel.wsgi:app"]
