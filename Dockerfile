# wshub in a container, in place of Centrifugo's image: the same working directory
# (/centrifugo, where a mounted config.json is read), the same unprivileged user id (1000),
# `CENTRIFUGO_*` variables, port 8000. Build: `docker build -t wshub .`
# Run:   docker run -p 8000:8000 -e CENTRIFUGO_HTTP_API_KEY=... -e CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY=... wshub

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p wshub && cp target/release/wshub /wshub

FROM debian:bookworm-slim
ARG USER=centrifugo
ARG UID=1000
ARG GID=1000
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd -g $GID $USER && useradd -r -u $UID -g $GID -d /centrifugo $USER \
    && mkdir /centrifugo && chown $USER:$USER /centrifugo
COPY --from=build /wshub /usr/local/bin/wshub
# Centrifugo's image runs `centrifugo`; a deployment that names the command keeps working.
RUN ln -s /usr/local/bin/wshub /usr/local/bin/centrifugo
USER $USER
WORKDIR /centrifugo
EXPOSE 8000
CMD ["wshub"]
