package io.mqttlb.hivemq;

import com.codahale.metrics.Gauge;
import com.codahale.metrics.Histogram;
import com.codahale.metrics.Meter;
import com.codahale.metrics.MetricRegistry;
import com.codahale.metrics.Timer;

import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import java.util.function.IntSupplier;

/**
 * The extension's own metrics, in HiveMQ's Dropwizard registry, so {@code /metrics} exports them by the same
 * rule as HiveMQ's (meters become counters {@code <name>_total}; timers and histograms summaries). All start
 * at 0 and are removed again when the extension stops.
 * <ul>
 *   <li>{@code mqttlb.hivemq.evict.clients} (Meter): clients disconnected by eviction commands</li>
 *   <li>{@code mqttlb.hivemq.evict.commands} (Timer): duration of each eviction command run</li>
 *   <li>{@code mqttlb.hivemq.evict.command-size} (Histogram): clients disconnected per command run</li>
 *   <li>{@code mqttlb.hivemq.http.refused} (Meter): HTTP requests refused (4xx), nothing changed</li>
 *   <li>{@code mqttlb.hivemq.draining} (Gauge): 1 while the availability endpoint answers 503, else 0</li>
 *   <li>{@code mqttlb.hivemq.clients.tracked} (Gauge): clients whose inbound load is being counted</li>
 * </ul>
 */
final class ExtensionMetrics {

    static final String PREFIX = "mqttlb.hivemq.";

    private final MetricRegistry registry;
    private final Meter evictedClients;
    private final Timer commands;
    private final Histogram commandSize;
    private final Meter refused;

    ExtensionMetrics(final MetricRegistry registry, final BooleanSupplier draining, final IntSupplier tracked) {
        this.registry = registry;
        evictedClients = registry.meter(PREFIX + "evict.clients");
        commands = registry.timer(PREFIX + "evict.commands");
        commandSize = registry.histogram(PREFIX + "evict.command-size");
        refused = registry.meter(PREFIX + "http.refused");
        registry.register(PREFIX + "draining", (Gauge<Integer>) () -> draining.getAsBoolean() ? 1 : 0);
        registry.register(PREFIX + "clients.tracked", (Gauge<Integer>) tracked::getAsInt);
    }

    /** One eviction command run: how many clients it disconnected and how long it took (nanoseconds). */
    void evicted(final int clients, final long nanos) {
        evictedClients.mark(clients);
        commandSize.update(clients);
        commands.update(nanos, TimeUnit.NANOSECONDS);
    }

    void refused() {
        refused.mark();
    }

    /** Removes every metric this class registered. */
    void remove() {
        registry.removeMatching((name, metric) -> name.startsWith(PREFIX));
    }
}
