# syntax=docker/dockerfile:1
# The operator's image: built in a Rust image, shipped on distroless with only the two binaries
# (the operator, and the LLM router that agent pods run from this image as their sidecar) and
# the C runtime they link, as a numeric non-root user, with no shell.
#
#   docker build --build-arg REVISION=$(git rev-parse --short HEAD) -t agent-operator .

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so a change of our code does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin agent-operator \
    && rm -rf src
COPY src src
ARG REVISION=""
ENV AGENT_OPERATOR_REVISION=${REVISION}
# Touch the sources so cargo rebuilds our crate over the placeholder built above.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin agent-operator --bin agent-router \
    && ./target/release/agent-operator version \
    && ./target/release/agent-router --version

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/agent-operator /agent-operator
COPY --from=build /src/target/release/agent-router /agent-router
# Numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/agent-operator"]
CMD ["run"]
