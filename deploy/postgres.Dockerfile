# PostgreSQL 15 from Debian, for the farm's durable state (queue, printers,
# attempts, events). Built from the same local debian:bookworm-slim base as
# the Printfarm image, so the farm needs no registry.
FROM debian:bookworm-slim
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && mkdir -p /var/lib/postgresql/data /run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/pf-postgres
ENV PGDATA=/var/lib/postgresql/data PATH=/usr/lib/postgresql/15/bin:$PATH
VOLUME /var/lib/postgresql/data
HEALTHCHECK --interval=3s --timeout=3s --start-period=30s --retries=5 \
  CMD ["pg_isready", "-q", "-h", "127.0.0.1", "-d", "printfarm", "-U", "printfarm"]
ENTRYPOINT ["pf-postgres"]
