package io.mqttlb.hivemq;

import com.codahale.metrics.MetricRegistry;
import com.hivemq.extension.sdk.api.ExtensionMain;
import com.hivemq.extension.sdk.api.parameter.ExtensionStartInput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStartOutput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStopInput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStopOutput;
import com.hivemq.extension.sdk.api.services.Services;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * The mqttlb HiveMQ extension: {@code /metrics} as HiveMQ's Prometheus extension serves it, an availability
 * endpoint for load-balancer health checks, and the eviction interface (per-client inbound load, bounded
 * disconnect of a chosen set). See {@link HttpApi} for the endpoints.
 */
public final class MqttlbExtension implements ExtensionMain {

    private static final Logger LOG = LoggerFactory.getLogger(MqttlbExtension.class);

    private final ExtensionConfig config;
    private final CompletableFuture<Integer> started = new CompletableFuture<>();
    private final AtomicBoolean draining = new AtomicBoolean(false);
    private HttpApi api;
    private ScheduledFuture<?> ticker;
    private ExtensionMetrics metrics;
    private List<String> processMetrics = List.of();

    public MqttlbExtension(final ExtensionConfig config) {
        this.config = config;
    }

    /** Completes with the HTTP port once the extension runs, or exceptionally when it could not start. */
    public CompletableFuture<Integer> started() {
        return started;
    }

    @Override
    public void extensionStart(final ExtensionStartInput input, final ExtensionStartOutput output) {
        try {
            final MetricRegistry metricRegistry = Services.metricRegistry();
            final ClientRegistry registry = new ClientRegistry(config.loadWindowSeconds());
            metrics = new ExtensionMetrics(metricRegistry, draining::get, registry::size);
            processMetrics = ProcessMetrics.register(metricRegistry);
            final Evictor evictor = new Evictor(Services.clientService(), registry, config, metrics);
            Services.eventRegistry().setClientLifecycleEventListener(registry.listeners());
            final var publishCounter = registry.publishCounter();
            final var serverReference = evictor.serverReferenceInterceptor();
            Services.initializerRegistry().setClientInitializer((initializerInput, clientContext) -> {
                clientContext.addPublishInboundInterceptor(publishCounter);
                clientContext.addDisconnectOutboundInterceptor(serverReference);
            });
            ticker = Services.extensionExecutorService().scheduleAtFixedRate(new Runnable() {
                private long last = System.nanoTime();

                @Override
                public void run() {
                    final long now = System.nanoTime();
                    registry.tick((now - last) / 1e9);
                    last = now;
                }
            }, 1, 1, TimeUnit.SECONDS);
            api = new HttpApi(config, metricRegistry, registry, evictor, metrics, draining);
            LOG.info("mqttlb extension: HTTP on {}:{} (metrics {}, API {})", config.bindAddress(), api.port(),
                    config.metricPath(), HttpApi.API_PREFIX);
            started.complete(api.port());
        } catch (final Exception e) {
            LOG.error("mqttlb extension could not start", e);
            stop();
            output.preventExtensionStartup("mqttlb extension could not start: " + e);
            started.completeExceptionally(e);
        }
    }

    @Override
    public void extensionStop(final ExtensionStopInput input, final ExtensionStopOutput output) {
        stop();
    }

    private void stop() {
        if (api != null) {
            api.stop();
            api = null;
        }
        if (ticker != null) {
            ticker.cancel(false);
            ticker = null;
        }
        if (metrics != null) {
            metrics.remove();
            metrics = null;
        }
        final MetricRegistry metricRegistry = Services.metricRegistry();
        processMetrics.forEach(metricRegistry::remove);
        processMetrics = List.of();
    }
}
