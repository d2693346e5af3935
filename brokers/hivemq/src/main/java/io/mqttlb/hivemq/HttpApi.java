package io.mqttlb.hivemq;

import com.codahale.metrics.MetricRegistry;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.MapperFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.exc.MismatchedInputException;
import com.fasterxml.jackson.databind.exc.UnrecognizedPropertyException;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import io.prometheus.client.CollectorRegistry;
import io.prometheus.client.dropwizard.DropwizardExports;
import io.prometheus.client.exporter.HTTPServer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Collectors;

/**
 * The extension's HTTP server (JDK {@link HttpServer}, like HiveMQ's Prometheus extension).
 * <ul>
 *   <li>{@code GET <metric_path>}: HiveMQ's Dropwizard registry through simpleclient's {@link DropwizardExports}
 *       and {@code HTTPMetricHandler}, exactly as hivemq-prometheus-extension serves it.</li>
 *   <li>{@code GET /mqttlb/v1/availability}: 200 {@code {"draining":false}} while accepting,
 *       503 {@code {"draining":true}} while draining (for load-balancer health checks; no token).</li>
 *   <li>{@code POST /mqttlb/v1/availability} {@code {"draining":true|false}} (token): sets the state.</li>
 *   <li>{@code GET /mqttlb/v1/clients} (token): per-client inbound load.</li>
 *   <li>{@code POST /mqttlb/v1/evict} (token): {@code {"clients":[..],"maxPerSecond":n,"reasonCode":156,
 *       "serverReference":"..","allowPersistent":false}} answers {@code {"evicted":[..],"unknown":[..],
 *       "refused":[..],"reason":".."}}.</li>
 * </ul>
 * Every refusal is a JSON {@code {"error":".."}} with a 4xx status, a log line and a count, and changes nothing:
 * 401 (token missing or wrong), 404, 405, 400 (malformed), 413 (body over 1 MiB), 422 (over a bound),
 * 409 (an eviction is running).
 */
final class HttpApi {

    static final String API_PREFIX = "/mqttlb/v1/";
    private static final Logger LOG = LoggerFactory.getLogger(HttpApi.class);
    private static final int MAX_BODY_BYTES = 1 << 20;
    private static final ObjectMapper JSON = JsonMapper.builder()
            .disable(MapperFeature.ALLOW_COERCION_OF_SCALARS)
            .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .disable(DeserializationFeature.ACCEPT_FLOAT_AS_INT)
            .build();

    static {
        // As hivemq-prometheus-extension: bound how long a request and a response may take.
        System.getProperties().putIfAbsent("sun.net.httpserver.maxReqTime", "60");
        System.getProperties().putIfAbsent("sun.net.httpserver.maxRspTime", "600");
    }

    /** Body of {@code POST /mqttlb/v1/availability}. */
    record DrainRequest(Boolean draining) {
    }

    /** Body of {@code POST /mqttlb/v1/evict}. */
    record EvictRequest(List<String> clients, Double maxPerSecond, Integer reasonCode, String serverReference,
                        Boolean allowPersistent) {
    }

    /** A refusal raised by a handler step. */
    private static final class Refusal extends Exception {
        final int status;

        Refusal(final int status, final String message) {
            super(message, null, false, false);
            this.status = status;
        }
    }

    @FunctionalInterface
    private interface Handler {
        void handle(HttpExchange exchange) throws Refusal, IOException;
    }

    private final HttpServer server;
    private final ExecutorService executor;
    private final byte[] expectedAuthorization;
    private final ExtensionConfig config;
    private final ClientRegistry registry;
    private final Evictor evictor;
    private final ExtensionMetrics metrics;
    private final AtomicBoolean draining;

    /**
     * Binds and starts the server.
     *
     * @throws IOException when the address cannot be bound
     */
    HttpApi(final ExtensionConfig config, final MetricRegistry metricRegistry, final ClientRegistry registry,
            final Evictor evictor, final ExtensionMetrics metrics, final AtomicBoolean draining) throws IOException {
        this.config = config;
        this.registry = registry;
        this.evictor = evictor;
        this.metrics = metrics;
        this.draining = draining;
        this.expectedAuthorization = ("Bearer " + config.token()).getBytes(StandardCharsets.UTF_8);
        server = HttpServer.create(new InetSocketAddress(config.bindAddress(), config.httpPort()), 50);
        // A few threads: an eviction command holds one for its whole run, scrapes use the others.
        executor = Executors.newFixedThreadPool(4, runnable -> {
            final Thread thread = new Thread(runnable, "mqttlb-http");
            thread.setDaemon(true);
            return thread;
        });
        server.setExecutor(executor);
        final CollectorRegistry collectors = new CollectorRegistry(true);
        collectors.register(new DropwizardExports(metricRegistry));
        server.createContext(config.metricPath(), new HTTPServer.HTTPMetricHandler(collectors, null));
        server.createContext("/", exchange -> respond(exchange, this::notFound));
        server.createContext(API_PREFIX + "availability", exchange -> respond(exchange, this::availability));
        server.createContext(API_PREFIX + "clients", exchange -> respond(exchange, this::clients));
        server.createContext(API_PREFIX + "evict", exchange -> respond(exchange, this::evict));
        server.start();
    }

    /** The bound port (the configured one, or the one picked for port 0). */
    int port() {
        return server.getAddress().getPort();
    }

    void stop() {
        server.stop(0);
        executor.shutdownNow();
    }

    private void notFound(final HttpExchange exchange) throws Refusal {
        throw new Refusal(404, "no such path: " + exchange.getRequestURI().getPath());
    }

    private void availability(final HttpExchange exchange) throws Refusal, IOException {
        exactPath(exchange);
        switch (exchange.getRequestMethod()) {
            case "GET" -> {
                final boolean now = draining.get();
                send(exchange, now ? 503 : 200, Map.of("draining", now));
            }
            case "POST" -> {
                authorize(exchange);
                final DrainRequest request = parse(exchange, DrainRequest.class);
                if (request.draining() == null) {
                    throw new Refusal(400, "draining: true or false is required");
                }
                final boolean before = draining.getAndSet(request.draining());
                if (before != request.draining()) {
                    LOG.info("mqttlb availability: draining {} -> {}", before, request.draining());
                }
                final Map<String, Object> body = new LinkedHashMap<>();
                body.put("draining", request.draining());
                body.put("changed", before != request.draining());
                send(exchange, 200, body);
            }
            default -> throw methodNotAllowed(exchange, "GET, POST");
        }
    }

    private void clients(final HttpExchange exchange) throws Refusal, IOException {
        exactPath(exchange);
        if (!"GET".equals(exchange.getRequestMethod())) {
            throw methodNotAllowed(exchange, "GET");
        }
        authorize(exchange);
        final Map<String, Object> body = new LinkedHashMap<>();
        final Map<String, Object> limits = new LinkedHashMap<>();
        limits.put("maxPerSecond", config.evictMaxPerSecond());
        limits.put("maxClients", config.evictMaxClients());
        limits.put("maxSeconds", config.evictMaxSeconds());
        limits.put("loadWindowSeconds", config.loadWindowSeconds());
        body.put("sharedSessions", config.sharedSessions());
        body.put("limits", limits);
        body.put("clients", registry.loads());
        send(exchange, 200, body);
    }

    private void evict(final HttpExchange exchange) throws Refusal, IOException {
        exactPath(exchange);
        if (!"POST".equals(exchange.getRequestMethod())) {
            throw methodNotAllowed(exchange, "POST");
        }
        authorize(exchange);
        final EvictRequest request = parse(exchange, EvictRequest.class);
        try {
            final Evictor.Command command = evictor.check(request.clients(), request.maxPerSecond(),
                    request.reasonCode(), request.serverReference(), request.allowPersistent());
            send(exchange, 200, evictor.run(command));
        } catch (final Evictor.Refused e) {
            throw new Refusal(e.status, e.getMessage());
        }
    }

    private static void exactPath(final HttpExchange exchange) throws Refusal {
        final String path = exchange.getRequestURI().getPath();
        if (!path.equals(exchange.getHttpContext().getPath())) {
            throw new Refusal(404, "no such path: " + path);
        }
    }

    private static Refusal methodNotAllowed(final HttpExchange exchange, final String allowed) {
        exchange.getResponseHeaders().set("Allow", allowed);
        return new Refusal(405, "method " + exchange.getRequestMethod() + " not allowed, use " + allowed);
    }

    private void authorize(final HttpExchange exchange) throws Refusal {
        final String given = exchange.getRequestHeaders().getFirst("Authorization");
        if (given == null || !MessageDigest.isEqual(given.getBytes(StandardCharsets.UTF_8), expectedAuthorization)) {
            exchange.getResponseHeaders().set("WWW-Authenticate", "Bearer");
            throw new Refusal(401, given == null ? "bearer token required" : "bearer token not accepted");
        }
    }

    private static <T> T parse(final HttpExchange exchange, final Class<T> type) throws Refusal, IOException {
        final byte[] body;
        try (InputStream in = exchange.getRequestBody()) {
            body = in.readNBytes(MAX_BODY_BYTES + 1);
        }
        if (body.length > MAX_BODY_BYTES) {
            throw new Refusal(413, "request body over " + MAX_BODY_BYTES + " bytes");
        }
        try {
            final T value = JSON.readValue(body, type);
            if (value == null) {
                throw new Refusal(400, "request body must be a JSON object");
            }
            return value;
        } catch (final UnrecognizedPropertyException e) {
            throw new Refusal(400, "unknown field: " + e.getPropertyName());
        } catch (final MismatchedInputException e) {
            final String field = e.getPath().stream().map(r -> r.getFieldName() != null ? r.getFieldName()
                    : String.valueOf(r.getIndex())).collect(Collectors.joining("."));
            throw new Refusal(400, field.isEmpty() ? "request body must be a JSON object"
                    : "field " + field + ": wrong type or value");
        } catch (final JsonProcessingException e) {
            throw new Refusal(400, "malformed JSON: " + e.getOriginalMessage());
        }
    }

    private void respond(final HttpExchange exchange, final Handler handler) throws IOException {
        try (exchange) {
            try {
                handler.handle(exchange);
            } catch (final Refusal refusal) {
                metrics.refused();
                LOG.info("mqttlb http: {} {} refused {}: {}", exchange.getRequestMethod(),
                        exchange.getRequestURI().getPath(), refusal.status, refusal.getMessage());
                send(exchange, refusal.status, Map.of("error", refusal.getMessage()));
            }
        }
    }

    private static void send(final HttpExchange exchange, final int status, final Object body) throws IOException {
        final byte[] bytes = JSON.writeValueAsBytes(body);
        exchange.getResponseHeaders().set("Content-Type", "application/json");
        exchange.sendResponseHeaders(status, bytes.length);
        exchange.getResponseBody().write(bytes);
    }
}
