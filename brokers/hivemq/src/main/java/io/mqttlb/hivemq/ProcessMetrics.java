package io.mqttlb.hivemq;

import com.codahale.metrics.Gauge;
import com.codahale.metrics.MetricRegistry;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.LongSupplier;

/**
 * Process CPU and memory gauges that HiveMQ Enterprise registers and Community Edition does not.
 * <p>
 * Registered under the Enterprise names only when the registry does not hold them already, so on
 * Enterprise nothing changes and on CE the broker exporter's HiveMQ adapter finds a CPU source:
 * <ul>
 *   <li>{@code com.hivemq.system.os.process.time-spent.user} / {@code .kernel}: CPU time in ms,
 *       from {@code /proc/self/stat} (Linux only; USER_HZ is 100)</li>
 *   <li>{@code com.hivemq.system.os.process.memory.resident-set-size}: bytes, from {@code /proc/self/status}</li>
 *   <li>{@code com.hivemq.system.process-cpu.time}: JVM process CPU time in ns
 *       ({@code OperatingSystemMXBean.getProcessCpuTime()}, -1 when unsupported)</li>
 * </ul>
 * A value that cannot be read (or -1 from the JVM) is left out of that scrape, never exported as -1 or NaN.
 */
final class ProcessMetrics {

    static final String USER_MS = "com.hivemq.system.os.process.time-spent.user";
    static final String KERNEL_MS = "com.hivemq.system.os.process.time-spent.kernel";
    static final String RSS_BYTES = "com.hivemq.system.os.process.memory.resident-set-size";
    static final String JVM_CPU_NS = "com.hivemq.system.process-cpu.time";
    private static final long USER_HZ = 100;
    private static final Path STAT = Path.of("/proc/self/stat");
    private static final Path STATUS = Path.of("/proc/self/status");

    private ProcessMetrics() {
    }

    /** Registers the gauges the registry lacks; returns their names (for removal at stop). */
    static List<String> register(final MetricRegistry registry) {
        final List<String> added = new ArrayList<>();
        if (Files.isReadable(STAT)) {
            addIfAbsent(registry, USER_MS, () -> statTicks(13) * 1000 / USER_HZ, added);
            addIfAbsent(registry, KERNEL_MS, () -> statTicks(14) * 1000 / USER_HZ, added);
        }
        if (Files.isReadable(STATUS)) {
            addIfAbsent(registry, RSS_BYTES, ProcessMetrics::rssBytes, added);
        }
        final var os = ManagementFactory.getOperatingSystemMXBean();
        if (os instanceof com.sun.management.OperatingSystemMXBean sun) {
            addIfAbsent(registry, JVM_CPU_NS, sun::getProcessCpuTime, added);
        }
        return added;
    }

    private static void addIfAbsent(final MetricRegistry registry, final String name, final LongSupplier value,
                                    final List<String> added) {
        if (!registry.getNames().contains(name)) {
            registry.register(name, (Gauge<Long>) () -> {
                final long v = value.getAsLong();
                return v < 0 ? null : v; // DropwizardExports skips a gauge whose value is not a number
            });
            added.add(name);
        }
    }

    /** Field {@code index} (0-based, as in proc(5) minus one) of /proc/self/stat, in clock ticks; -1 if unreadable. */
    private static long statTicks(final int index) {
        try {
            final String stat = Files.readString(STAT);
            // The command name (field 2) is in parentheses and may hold spaces: split after its closing one.
            final String[] fields = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
            return Long.parseLong(fields[index - 2]);
        } catch (IOException | RuntimeException e) {
            return -1;
        }
    }

    private static long rssBytes() {
        try {
            for (final String line : Files.readAllLines(STATUS)) {
                if (line.startsWith("VmRSS:")) {
                    return Long.parseLong(line.substring(6).trim().split("\\s+")[0]) * 1024;
                }
            }
        } catch (IOException | RuntimeException e) {
            return -1;
        }
        return -1;
    }
}
