keyLatchStatus - Failed to acquire key details: Key(KeyResponse(&quot;acquire&quot;, 500))
