# Redis from Debian: the schedulers' leader lease and pf-discovery's registry.
# Neither needs to survive a restart (the lease is re-won, instances
# re-register), so it runs without persistence.
FROM debian:bookworm-slim
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
USER redis
HEALTHCHECK --interval=3s --timeout=3s --start-period=10s --retries=5 \
  CMD ["redis-cli", "-h", "127.0.0.1", "ping"]
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
