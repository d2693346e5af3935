package io.mqttlb.hivemq;

import com.hivemq.extension.sdk.api.ExtensionMain;
import com.hivemq.extension.sdk.api.parameter.ExtensionStartInput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStartOutput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStopInput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStopOutput;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;

/**
 * The entry point HiveMQ loads from the extension folder ({@code extensions/mqttlb-extension/}, found through
 * {@code META-INF/services/com.hivemq.extension.sdk.api.ExtensionMain} in the extension's jar): reads
 * {@link ExtensionProperties#FILE} in that folder and runs {@link MqttlbExtension} with it. A settings file
 * that cannot be used prevents the extension's start (HiveMQ logs the reason and runs without it).
 */
public final class MqttlbExtensionMain implements ExtensionMain {

    private static final Logger LOG = LoggerFactory.getLogger(MqttlbExtensionMain.class);

    private MqttlbExtension extension;

    @Override
    public void extensionStart(final ExtensionStartInput input, final ExtensionStartOutput output) {
        final ExtensionConfig config;
        try {
            config = ExtensionProperties.load(input.getExtensionInformation().getExtensionHomeFolder().toPath());
        } catch (final IOException | IllegalArgumentException e) {
            LOG.error("mqttlb extension: bad settings: {}", e.toString());
            output.preventExtensionStartup("mqttlb extension: bad settings: " + e.getMessage());
            return;
        }
        extension = new MqttlbExtension(config);
        extension.extensionStart(input, output);
    }

    @Override
    public void extensionStop(final ExtensionStopInput input, final ExtensionStopOutput output) {
        if (extension != null) {
            extension.extensionStop(input, output);
            extension = null;
        }
    }
}
