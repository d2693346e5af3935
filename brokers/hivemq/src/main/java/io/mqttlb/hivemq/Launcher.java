package io.mqttlb.hivemq;

import com.hivemq.embedded.EmbeddedExtension;
import com.hivemq.embedded.EmbeddedHiveMQ;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * Runs one HiveMQ Community Edition node (embedded API) with the mqttlb extension until SIGTERM/SIGINT.
 * <p>
 * It writes {@code <data-dir>/conf/config.xml} (one TCP listener, persistence mode, no usage statistics) and
 * {@code conf/logback.xml} (console), starts HiveMQ with the extension, prints one line
 * {@code mqttlb-hivemq: started in <ms> ms mqtt=<addr> http=<addr>} and runs until stopped.
 * Exit status: 0 after a clean stop, 1 when HiveMQ or the extension fails to start, 2 for bad arguments.
 */
@Command(name = "mqttlb-hivemq", mixinStandardHelpOptions = true, version = "mqttlb-hivemq 0.1.0 (HiveMQ CE 2025.5)",
        description = "Run one HiveMQ CE node with the mqttlb extension (metrics, availability, eviction).")
public final class Launcher implements Callable<Integer> {

    @Option(names = "--mqtt-port", required = true, description = "MQTT TCP listener port")
    int mqttPort;

    @Option(names = {"--http-port", "--metrics-port"}, required = true,
            description = "port of the extension's HTTP server: /metrics and /mqttlb/v1/*")
    int httpPort;

    @Option(names = "--data-dir", required = true, description = "node folder: conf/, data/, extensions/ inside")
    Path dataDir;

    @Option(names = "--token-file", required = true, description = "file holding the bearer token of the API")
    Path tokenFile;

    @Option(names = "--bind", defaultValue = "127.0.0.1", description = "address of both listeners (${DEFAULT-VALUE})")
    String bind;

    @Option(names = "--metric-path", defaultValue = "/metrics", description = "Prometheus path (${DEFAULT-VALUE})")
    String metricPath;

    @Option(names = "--persistence", defaultValue = "in-memory",
            description = "HiveMQ persistence mode: in-memory or file (${DEFAULT-VALUE})")
    String persistence;

    @Option(names = "--server-reference", description = "MQTT 5 Server Reference sent with 0x9C/0x9D evictions")
    String serverReference;

    @Option(names = "--evict-max-per-second", defaultValue = "100",
            description = "bound of an eviction's rate, clients/s (${DEFAULT-VALUE})")
    double evictMaxPerSecond;

    @Option(names = "--evict-max-clients", defaultValue = "1000",
            description = "bound of the clients in one eviction command (${DEFAULT-VALUE})")
    int evictMaxClients;

    @Option(names = "--evict-max-seconds", defaultValue = "60",
            description = "bound of one eviction command's duration, s (${DEFAULT-VALUE})")
    double evictMaxSeconds;

    @Option(names = "--load-window-seconds", defaultValue = "10",
            description = "time constant of the per-client inbound rate, s (${DEFAULT-VALUE})")
    double loadWindowSeconds;

    private final AtomicBoolean stopping = new AtomicBoolean();
    private volatile boolean running;

    public static void main(final String[] args) {
        System.exit(new CommandLine(new Launcher()).execute(args));
    }

    @Override
    public Integer call() throws Exception {
        final ExtensionConfig config;
        try {
            if (!persistence.equals("in-memory") && !persistence.equals("file")) {
                throw new IllegalArgumentException("persistence must be in-memory or file, got " + persistence);
            }
            if (!bind.matches("[A-Za-z0-9.:-]+")) {
                throw new IllegalArgumentException("bind must be an address or host name, got " + bind);
            }
            if (mqttPort < 1 || mqttPort > 65535) {
                throw new IllegalArgumentException("mqtt port must be 1..65535, got " + mqttPort);
            }
            config = new ExtensionConfig(bind, httpPort, metricPath, ExtensionConfig.readToken(tokenFile),
                    evictMaxPerSecond, evictMaxClients, evictMaxSeconds, serverReference, loadWindowSeconds, false);
        } catch (final IllegalArgumentException | IOException e) {
            System.err.println("mqttlb-hivemq: error: " + e.getMessage());
            return 2;
        }
        final long startNanos = System.nanoTime();
        final Path conf = writeConfig();
        final MqttlbExtension extension = new MqttlbExtension(config);
        final EmbeddedHiveMQ hivemq = EmbeddedHiveMQ.builder()
                .withConfigurationFolder(conf)
                .withDataFolder(Files.createDirectories(dataDir.resolve("data")))
                .withExtensionsFolder(Files.createDirectories(dataDir.resolve("extensions")))
                .withEmbeddedExtension(EmbeddedExtension.builder()
                        .withId("mqttlb-extension")
                        .withName("mqttlb extension")
                        .withVersion("0.1.0")
                        .withAuthor("mqttlb")
                        .withExtensionMain(extension)
                        .build())
                .build();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> stop(hivemq), "mqttlb-hivemq-stop"));
        final int port;
        try {
            hivemq.start().get(120, TimeUnit.SECONDS);
            port = extension.started().get(10, TimeUnit.SECONDS);
        } catch (final ExecutionException | TimeoutException e) {
            System.err.println("mqttlb-hivemq: error: start failed: " + (e.getCause() != null ? e.getCause() : e));
            stop(hivemq);
            return 1;
        }
        running = true;
        System.out.printf("mqttlb-hivemq: started in %d ms mqtt=%s:%d http=%s:%d%n",
                (System.nanoTime() - startNanos) / 1_000_000, bind, mqttPort, bind, port);
        System.out.flush();
        Thread.currentThread().join();
        return 0;
    }

    /** Stops HiveMQ once (the shutdown hook and a failed start may both ask); a failed start has nothing to report. */
    private void stop(final EmbeddedHiveMQ hivemq) {
        if (!stopping.compareAndSet(false, true)) {
            return;
        }
        try {
            hivemq.stop().get(30, TimeUnit.SECONDS);
        } catch (final Exception e) {
            if (running) {
                System.err.println("mqttlb-hivemq: stop: " + e);
            }
        }
    }

    /** Writes conf/config.xml and conf/logback.xml for this node; returns the conf folder. */
    private Path writeConfig() throws IOException {
        final Path conf = Files.createDirectories(dataDir.resolve("conf"));
        final String xml = """
                <?xml version="1.0"?>
                <!-- written by mqttlb-hivemq at every start; edit its command line instead -->
                <hivemq>
                    <listeners>
                        <tcp-listener>
                            <port>%d</port>
                            <bind-address>%s</bind-address>
                        </tcp-listener>
                    </listeners>
                    <persistence>
                        <mode>%s</mode>
                    </persistence>
                    <anonymous-usage-statistics>
                        <enabled>false</enabled>
                    </anonymous-usage-statistics>
                </hivemq>
                """.formatted(mqttPort, bind, persistence);
        Files.writeString(conf.resolve("config.xml"), xml, StandardCharsets.UTF_8);
        final String logback = """
                <configuration>
                    <appender name="CONSOLE" class="ch.qos.logback.core.ConsoleAppender">
                        <encoder><pattern>%d{yyyy-MM-dd HH:mm:ss.SSS} %-5level %logger{0} - %msg%n%ex</pattern></encoder>
                    </appender>
                    <root level="INFO"><appender-ref ref="CONSOLE"/></root>
                    <logger name="jetbrains.exodus" level="WARN"/>
                    <logger name="org.eclipse.jetty" level="ERROR"/>
                    <logger name="com.google.common.util.concurrent.Futures$CombinedFuture" level="OFF"/>
                    <logger name="oshi" level="ERROR"/>
                </configuration>
                """;
        Files.writeString(conf.resolve("logback.xml"), logback, StandardCharsets.UTF_8);
        return conf;
    }
}
